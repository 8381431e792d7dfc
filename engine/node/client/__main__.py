from engine.node.client.cli import main

main()
