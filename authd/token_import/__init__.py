"""Loading boxes of hardware tokens: RFC 6030 PSKC and CSV files into unassigned tokens.

`csv_rows` and `pskc` parse a file into `Token` records (seed in clear, no user) or
raise `TokenFileError` naming every bad line or key package; `load` writes them all in
one transaction or none; `register` lets a user claim one by serial plus a code.
"""
