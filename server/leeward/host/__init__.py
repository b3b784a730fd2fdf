"""What runs on a host of the fleet, and, for the local fleet, the network its hosts share."""
