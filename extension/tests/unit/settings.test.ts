import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';

import { findDaemon, type DaemonLookup } from '../../src/common/daemonPath';
import { daemonSettings, restartsDaemon, type SettingsSource } from '../../src/common/settings';

function source(values: Record<string, { globalValue?: unknown; workspaceValue?: unknown }>) {
  return {
    inspect: (key: string) => values[key] ?? {},
  } as SettingsSource;
}

test('the daemon gets only the settings the user set', () => {
  assert.deepEqual(daemonSettings(source({})), {});
  assert.deepEqual(
    daemonSettings(
      source({
        fleetUrl: { globalValue: ' http://127.0.0.1:8470 ' },
        defaultRegion: { globalValue: 'north', workspaceValue: 'south' },
        credentialsFile: { globalValue: '' },
        logLevel: { globalValue: 'debug' },
        probeIntervalSeconds: { globalValue: 0.5 },
      }),
    ),
    {
      fleetUrl: 'http://127.0.0.1:8470',
      defaultRegion: 'south',
      logLevel: 'debug',
      probeIntervalSeconds: 0.5,
    },
  );
  assert.deepEqual(daemonSettings(source({ logLevel: { globalValue: 'loud' } })), {});
});

test('a change to any leeward daemon setting restarts it; others do not', () => {
  assert.equal(
    restartsDaemon((s) => s === 'leeward.logLevel'),
    true,
  );
  assert.equal(
    restartsDaemon((s) => s === 'leeward.daemonPath'),
    true,
  );
  assert.equal(
    restartsDaemon((s) => s === 'editor.fontSize'),
    false,
  );
});

function lookup(executables: string[], overrides: Partial<DaemonLookup> = {}): DaemonLookup {
  return {
    setting: undefined,
    workspaceFolders: ['/work/repo'],
    trusted: true,
    pathEnv: ['/usr/local/bin', '/usr/bin'].join(path.delimiter),
    platform: 'linux',
    isExecutable: (file) => Promise.resolve(executables.includes(file)),
    ...overrides,
  };
}

test('the daemon path: the setting, else the workspace .venv, else PATH', async () => {
  const all = ['/opt/leeward/bin/leeward', '/work/repo/.venv/bin/leeward', '/usr/bin/leeward'];
  assert.deepEqual(await findDaemon(lookup(all, { setting: '/opt/leeward/bin/leeward' })), {
    found: true,
    command: '/opt/leeward/bin/leeward',
    source: 'setting',
  });
  assert.deepEqual(await findDaemon(lookup(all)), {
    found: true,
    command: '/work/repo/.venv/bin/leeward',
    source: 'workspace',
  });
  assert.deepEqual(await findDaemon(lookup(all, { trusted: false })), {
    found: true,
    command: '/usr/bin/leeward',
    source: 'path',
  });
});

test('a wrong setting or no leeward at all says what to do', async () => {
  const relative = await findDaemon(lookup([], { setting: 'leeward' }));
  assert.equal(relative.found, false);
  assert.match(relative.found ? '' : relative.reason, /absolute path/);
  const missing = await findDaemon(lookup([], { setting: '/nope/leeward' }));
  assert.match(missing.found ? '' : missing.reason, /not an executable/);
  const none = await findDaemon(lookup([]));
  assert.match(none.found ? '' : none.reason, /set leeward\.daemonPath/);
});
