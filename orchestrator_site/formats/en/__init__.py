"""English formats (the only language the admin speaks here): see formats.py."""
