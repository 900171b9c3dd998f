from smartroute.cli import main

main()
