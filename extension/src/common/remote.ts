/** Which environment a VS Code window is on, from its Remote-SSH authority. */
import type { Environment } from '../protocol/generated';

export const REMOTE_SSH_EXTENSION = 'ms-vscode-remote.remote-ssh';

/** The ssh alias in a Remote-SSH authority: `ssh-remote+ALIAS`, or Remote-SSH's hex-encoded
 * JSON form (`ssh-remote+7b22686f73744e616d65...`) that it uses for hosts with odd characters. */
export function aliasFromAuthority(authority: string | undefined): string | undefined {
  if (authority === undefined) return undefined;
  const match = /^ssh-remote\+(.+)$/.exec(authority);
  const host = match?.[1];
  if (host === undefined) return undefined;
  if (/^[0-9a-f]+$/i.test(host) && host.length % 2 === 0 && host.startsWith('7b')) {
    try {
      const decoded = JSON.parse(Buffer.from(host, 'hex').toString('utf8')) as unknown;
      if (decoded !== null && typeof decoded === 'object' && 'hostName' in decoded) {
        const name = decoded.hostName;
        if (typeof name === 'string') return name;
      }
    } catch {
      // not the JSON form after all: an alias that happens to look like hex
    }
  }
  return decodeURIComponent(host);
}

/** The alias of this window, when it is a Remote-SSH window. */
export function windowAlias(
  remoteName: string | undefined,
  folderAuthorities: readonly string[],
): string | undefined {
  if (remoteName !== 'ssh-remote') return undefined;
  for (const authority of folderAuthorities) {
    const alias = aliasFromAuthority(authority);
    if (alias !== undefined) return alias;
  }
  return undefined;
}

/** The environment the status bar shows: this window's, else the last one used, else the one
 * it showed before (while it lives: a migration is no reason to show another, or none), else
 * the first running one. */
export function shownEnvironment(
  environments: readonly Environment[],
  windowAliasName: string | undefined,
  lastUsed: string | undefined,
  shownBefore?: string,
): Environment | undefined {
  const byAlias = (alias: string): Environment | undefined =>
    environments.find((e) => e.name === alias || e.fqdn === alias);
  if (windowAliasName !== undefined) {
    const mine = byAlias(windowAliasName);
    if (mine !== undefined) return mine;
  }
  if (lastUsed !== undefined) {
    const last = byAlias(lastUsed);
    if (last !== undefined) return last;
  }
  const before = environments.find((e) => e.id === shownBefore);
  if (before !== undefined && before.state !== 'deleted') return before;
  return environments.find((e) => e.state === 'running');
}
