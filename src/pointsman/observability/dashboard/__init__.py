"""The admin dashboard: data.py reads the ledger, page.py renders it, http.py serves it."""
