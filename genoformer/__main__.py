from genoformer.cli import main

main()
