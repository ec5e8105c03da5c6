from storyd.cli import main

main()
