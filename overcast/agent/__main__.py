"""``python -m overcast.agent`` = ``overcast-agent``."""

from overcast.agent.main import main

main()
