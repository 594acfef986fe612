"""Care tools computed from a patient's own measurements (glucose first).

Pure computation and parsing: nothing here reads files, opens databases or talks HTTP.
The layers above hand in bytes or readings and store or serve what comes back.
"""

__all__: list[str] = []
