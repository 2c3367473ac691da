"""Protocol-faithful fake servers (aiohttp on 127.0.0.1) standing in for remote services in tests."""
