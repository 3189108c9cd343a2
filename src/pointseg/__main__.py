from pointseg.cli import main

main()
