from rnnexport.cli import main

main()
