"""rostersync: keeps Google Classroom classes in step with a district's SIS (Clever or OneRoster)."""

# The one place the version is written: pyproject.toml reads it from here (the functions' archive is
# the source tree, not an installed distribution), and so do `rostersync --version` and the User-Agent.
__version__ = "0.1.0"

# Sent with every request to Clever and OneRoster, so a provider's logs tell our calls apart.
USER_AGENT = f"rostersync/{__version__}"
