"""Built-in source and target plugins, registered through entry points like any third party's."""
