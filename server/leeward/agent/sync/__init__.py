"""Profile sync, the agent's side: the owner's profile goes into the home, edits to tracked
files go back to the fleet, and nothing is lost when two environments edit the same file.

The one record that makes this work is, per path, the content this agent last synced (applied
from the profile or uploaded to it), kept in `~/.local/state/leeward/sync.json` with the
profile version applied. A local file equal to it is unedited: a newer profile version simply
replaces it. A local file that differs was edited here: a newer version from elsewhere is
written next to it as `FILE.leeward-conflict-<source>-<time>`, and the local one is uploaded
on top of it (the other stays in the profile's history and in the copy).

Three loops run while the environment has an owner: the fleet's long poll for new versions;
uploads, after a burst of file events has settled (watchdog) or every minute regardless; and
status reports to the fleet when something changed. Fleet errors are logged, reported and
retried with backoff; they never stop the agent.

Its modules: `record` (that record), `home` (reading and writing files in the home), `apply`
(a profile version into the home), `profilesync` (`ProfileSync`: the loops, pulls, pushes and
reports), `watch` (file events on the tracked paths).
"""
