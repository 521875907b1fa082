"""authd.config"""
