"""`python -m leeward.agent --config PATH`: run one environment's agent."""

from leeward.agent.main import main

raise SystemExit(main())
