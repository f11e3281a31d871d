from rnnexport.console_script import entry_point

entry_point()
