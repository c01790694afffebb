from sorter.cli import cli

cli()
