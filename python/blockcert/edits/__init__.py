"""BlockCert-Edit, pure parts: patch schemas and their application to a block IR, the refusal classifier,
and the edit-quality measures (paper §7). No I/O here: workflows/edit.py reads and writes the files."""
