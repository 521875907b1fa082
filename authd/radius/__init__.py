"""authd.radius"""
