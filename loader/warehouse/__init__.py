"""The warehouse: table definitions, one writer per dialect behind one interface, migrations, queries."""
