/** The extension's settings (`leeward.*`) and the daemon settings made from them. */
import type { DaemonSettings } from '../protocol/generated';

export const SECTION = 'leeward';

/** Settings whose change restarts the daemon (all of them: each is the daemon's or says which
 * daemon to run). */
export const DAEMON_SETTINGS = [
  'daemonPath',
  'fleetUrl',
  'credentialsFile',
  'defaultRegion',
  'logLevel',
  'probeIntervalSeconds',
] as const;

/** The part of `vscode.WorkspaceConfiguration` this module reads. */
export interface SettingsSource {
  inspect<T>(
    key: string,
  ): { globalValue?: T; workspaceValue?: T; workspaceFolderValue?: T } | undefined;
}

/** The value the user set for `key` (workspace folder, then workspace, then user); undefined
 * when only the default applies, so the daemon's own default stands. */
export function userValue<T>(source: SettingsSource, key: string): T | undefined {
  const inspected = source.inspect<T>(key);
  if (inspected === undefined) return undefined;
  for (const value of [
    inspected.workspaceFolderValue,
    inspected.workspaceValue,
    inspected.globalValue,
  ]) {
    if (value !== undefined && value !== null && value !== '') return value;
  }
  return undefined;
}

const LOG_LEVELS = new Set(['debug', 'info', 'warning', 'error']);

/** `initializationOptions` for the daemon: only what the user set. */
export function daemonSettings(source: SettingsSource): DaemonSettings {
  const settings: DaemonSettings = {};
  const text = (key: string): string | undefined => {
    const value = userValue<unknown>(source, key);
    return typeof value === 'string' && value.trim() !== '' ? value.trim() : undefined;
  };
  const fleetUrl = text('fleetUrl');
  if (fleetUrl !== undefined) settings.fleetUrl = fleetUrl;
  const credentialsFile = text('credentialsFile');
  if (credentialsFile !== undefined) settings.credentialsFile = credentialsFile;
  const defaultRegion = text('defaultRegion');
  if (defaultRegion !== undefined) settings.defaultRegion = defaultRegion;
  const logLevel = text('logLevel');
  if (logLevel !== undefined && LOG_LEVELS.has(logLevel)) {
    settings.logLevel = logLevel as NonNullable<DaemonSettings['logLevel']>;
  }
  const probe = userValue<unknown>(source, 'probeIntervalSeconds');
  if (typeof probe === 'number' && Number.isFinite(probe)) settings.probeIntervalSeconds = probe;
  return settings;
}

/** Whether a configuration change touches a setting that restarts the daemon. */
export function restartsDaemon(affects: (section: string) => boolean): boolean {
  return DAEMON_SETTINGS.some((key) => affects(`${SECTION}.${key}`));
}
