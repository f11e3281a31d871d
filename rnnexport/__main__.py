from rnnexport.cli import entry_point

entry_point()
