from debx.cli import main

main()
