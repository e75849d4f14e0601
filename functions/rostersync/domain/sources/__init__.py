"""The sources' pure translation: Clever events and contacts, OneRoster records and CSV bundles ->
roster and guardian changes. The HTTP clients that fetch them are in rostersync/adapters/."""
