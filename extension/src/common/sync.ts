/** Fetches what the views show from the daemon at once: account, environments, health. The
 * daemon's notifications keep it current afterwards. */
import type { DaemonApi } from './daemonApi';
import type { EnvironmentStore } from './environments';
import { EnvironmentsListRequest, HealthListRequest, StatusGetRequest } from '../protocol/methods';

export async function syncFromDaemon(daemon: DaemonApi, store: EnvironmentStore): Promise<void> {
  const status = await daemon.request(StatusGetRequest, {});
  store.setAccount(status);
  if (status.fleet === 'signedOut') {
    store.setList({ environments: [], stale: false, fetchedAt: null, reason: '' });
    store.setHealthRecords([]);
    return;
  }
  const [list, health] = await Promise.all([
    daemon.request(EnvironmentsListRequest, {}),
    daemon.request(HealthListRequest, {}),
  ]);
  store.setList(list);
  store.setHealthRecords(health.records);
}
