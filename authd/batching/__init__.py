"""The batching layer: runs the decision layer's decisions (authd/decision) many at a
time. `batch.py` groups decisions so that their reads are one statement and their
writes one transaction, answering each only after that commit; `threaded.py` schedules
them on the worker pool and hands the answers back to the reactor. Nothing here decides
anything: a change to a lockout rule is made in authd/decision alone.
"""
