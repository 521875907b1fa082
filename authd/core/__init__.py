"""authd.core"""
