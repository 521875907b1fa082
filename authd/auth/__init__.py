"""authd.auth"""
