"""authd.rest"""
