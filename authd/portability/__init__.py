"""Moving users, tokens and their state between authd sites: an encrypted bundle
(`bundle`), its records (`records`), the merge rules of an import (`merge`) and the
audited operator actions (`ops`). The format is in docs/BUNDLE.md."""
