"""Server-rendered pages: Jinja2 templates (`templates/`) and static files (`static/`)."""
