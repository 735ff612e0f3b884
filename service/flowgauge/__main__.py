from flowgauge.cli import main

main()
