"""authd.storage"""
