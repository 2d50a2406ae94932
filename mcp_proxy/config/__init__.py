"""What the user asks for: the command line, the values its flags take, and the settings
(dataclasses and the named-server config file) every mode is built from.
"""
