"""authd.portal"""
