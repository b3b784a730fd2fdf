/** The contributions that the end-to-end test and the users rely on, by their exact ids. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

interface Manifest {
  publisher: string;
  name: string;
  version: string;
  main: string;
  activationEvents: string[];
  contributes: {
    commands: { command: string; title: string; category: string }[];
    configuration: { properties: Record<string, unknown> };
    viewsContainers: { activitybar: { id: string; title: string }[] };
    views: Record<string, { id: string }[]>;
    menus: Record<string, { command: string; when?: string; group?: string }[]>;
    walkthroughs: { steps: { id: string }[] }[];
  };
}

const manifest = JSON.parse(
  readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'),
) as Manifest;

test('the extension is leeward.leeward 0.1.0, active once the window has started', () => {
  assert.equal(`${manifest.publisher}.${manifest.name}`, 'leeward.leeward');
  assert.equal(manifest.version, '0.1.0');
  assert.equal(manifest.main, './dist/extension.js');
  assert.ok(manifest.activationEvents.includes('onStartupFinished'));
});

test('the commands, titled in one Leeward category', () => {
  const titles = Object.fromEntries(manifest.contributes.commands.map((c) => [c.command, c.title]));
  assert.deepEqual(
    {
      'leeward.createEnvironment': titles['leeward.createEnvironment'],
      'leeward.connect': titles['leeward.connect'],
      'leeward.openTerminal': titles['leeward.openTerminal'],
      'leeward.extend': titles['leeward.extend'],
      'leeward.delete': titles['leeward.delete'],
      'leeward.showLogs': titles['leeward.showLogs'],
      'leeward.restartDaemon': titles['leeward.restartDaemon'],
      'leeward.signIn': titles['leeward.signIn'],
      'leeward.refresh': titles['leeward.refresh'],
    },
    {
      'leeward.createEnvironment': 'Create Environment',
      'leeward.connect': 'Connect to Environment',
      'leeward.openTerminal': 'Open Terminal',
      'leeward.extend': 'Extend',
      'leeward.delete': 'Delete',
      'leeward.showLogs': 'Show Logs',
      'leeward.restartDaemon': 'Restart Daemon',
      'leeward.signIn': 'Sign In',
      'leeward.refresh': 'Refresh',
    },
  );
  for (const command of manifest.contributes.commands) assert.equal(command.category, 'Leeward');
});

test('the settings', () => {
  assert.deepEqual(Object.keys(manifest.contributes.configuration.properties).sort(), [
    'leeward.credentialsFile',
    'leeward.daemonPath',
    'leeward.defaultRegion',
    'leeward.fleetUrl',
    'leeward.logLevel',
    'leeward.probeIntervalSeconds',
  ]);
});

test('the view, its container, and inline actions for each item', () => {
  assert.deepEqual(manifest.contributes.viewsContainers.activitybar[0], {
    id: 'leeward',
    title: 'Leeward',
    icon: 'media/leeward.svg',
  });
  assert.equal(manifest.contributes.views.leeward?.[0]?.id, 'leeward.environments');
  const inline = (manifest.contributes.menus['view/item/context'] ?? [])
    .filter((m) => m.group?.startsWith('inline'))
    .map((m) => m.command);
  assert.deepEqual(inline, [
    'leeward.connect',
    'leeward.openTerminal',
    'leeward.extend',
    'leeward.delete',
  ]);
});

test('the walkthrough: install, sign in, create, connect', () => {
  assert.deepEqual(
    manifest.contributes.walkthroughs[0]?.steps.map((s) => s.id),
    ['install', 'signIn', 'create', 'connect'],
  );
});
