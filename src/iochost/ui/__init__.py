"""The web dashboard's files (``static/``), served at ``/ui/`` by ``api.routes.ui``: plain HTML,
CSS and one JavaScript module, no build step, nothing fetched from elsewhere."""
