"""`deltajobs ui`: a web dashboard of the runs, their curves, logs and cost (serve.py: the server
behind the token gate; web.py: the Flask app; data.py: what it shows, read through the CLI's own
functions; templates/ and static/: the pages, with uPlot vendored). Flask is imported only here."""
