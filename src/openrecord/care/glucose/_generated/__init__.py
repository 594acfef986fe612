"""Generated data of the glucose reports (scripts/compile_*.py write it; do not edit)."""
