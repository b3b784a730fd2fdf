"""What runs on every host of the fleet: `leeward host serve`, the host agent."""
