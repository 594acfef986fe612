"""Weight and blood pressure: pure computations over home vital-sign readings."""

__all__: list[str] = []
