/** Which `leeward` executable runs the daemon: the `leeward.daemonPath` setting, else the
 * workspace's Python environment (`.venv`), else `leeward` on PATH. */
import { access, constants } from 'node:fs/promises';
import * as path from 'node:path';

export interface DaemonLookup {
  /** `leeward.daemonPath`, possibly empty. */
  setting: string | undefined;
  workspaceFolders: readonly string[];
  /** Only a trusted workspace's own `.venv` is run. */
  trusted: boolean;
  pathEnv: string | undefined;
  platform: NodeJS.Platform;
  isExecutable?: (file: string) => Promise<boolean>;
}

export type DaemonCommand =
  | { found: true; command: string; source: 'setting' | 'workspace' | 'path' }
  | { found: false; reason: string };

export async function isExecutableFile(file: string): Promise<boolean> {
  try {
    await access(file, process.platform === 'win32' ? constants.F_OK : constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export async function findDaemon(lookup: DaemonLookup): Promise<DaemonCommand> {
  const executable = lookup.isExecutable ?? isExecutableFile;
  const windows = lookup.platform === 'win32';
  const setting = lookup.setting?.trim();
  if (setting) {
    if (!path.isAbsolute(setting)) {
      return {
        found: false,
        reason: `leeward.daemonPath must be an absolute path; it is "${setting}".`,
      };
    }
    if (await executable(setting)) return { found: true, command: setting, source: 'setting' };
    return {
      found: false,
      reason: `leeward.daemonPath is ${setting}, which is not an executable file.`,
    };
  }
  if (lookup.trusted) {
    const relative = windows
      ? path.join('.venv', 'Scripts', 'leeward.exe')
      : path.join('.venv', 'bin', 'leeward');
    for (const folder of lookup.workspaceFolders) {
      const candidate = path.join(folder, relative);
      if (await executable(candidate)) {
        return { found: true, command: candidate, source: 'workspace' };
      }
    }
  }
  const names = windows ? ['leeward.exe', 'leeward.cmd', 'leeward'] : ['leeward'];
  for (const dir of (lookup.pathEnv ?? '').split(path.delimiter)) {
    if (!dir) continue;
    for (const name of names) {
      const candidate = path.join(dir, name);
      if (await executable(candidate)) return { found: true, command: candidate, source: 'path' };
    }
  }
  return {
    found: false,
    reason:
      'No leeward executable found: set leeward.daemonPath, or install Leeward into the ' +
      "workspace's .venv or onto PATH.",
  };
}
