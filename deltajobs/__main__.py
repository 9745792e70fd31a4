from deltajobs.cli import main

main()
