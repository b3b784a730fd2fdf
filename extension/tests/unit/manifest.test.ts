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
      'leeward.backUpNow': titles['leeward.backUpNow'],
      'leeward.restoreToNewDevserver': titles['leeward.restoreToNewDevserver'],
      'leeward.restorePath': titles['leeward.restorePath'],
      'leeward.move': titles['leeward.move'],
      'leeward.showAnnouncements': titles['leeward.showAnnouncements'],
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
      'leeward.backUpNow': 'Back Up Now',
      'leeward.restoreToNewDevserver': 'Restore into a New Devserver',
      'leeward.restorePath': 'Restore a Path',
      'leeward.move': 'Move Devserver',
      'leeward.showAnnouncements': 'Show Announcements',
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
    'leeward.backUpNow',
  ]);
});

test('backup actions show on the items they apply to, by their context words', () => {
  const menus = manifest.contributes.menus['view/item/context'] ?? [];
  const when = (command: string): string[] =>
    menus.filter((m) => m.command === command).map((m) => m.when ?? '');
  const shows = (command: string, contextValue: string): boolean =>
    when(command).some((clause) =>
      [...clause.matchAll(/viewItem =~ \/(.+?)\/(?= |$)/g)].every((m) =>
        new RegExp(m[1] ?? '').test(contextValue),
      ),
    );
  const devserver = 'environment devserver connect terminal delete backUpNow move';
  const backups = 'backups backUpNow';
  const backup = 'backup succeeded restorable';
  assert.ok(shows('leeward.backUpNow', devserver));
  assert.ok(shows('leeward.backUpNow', backups));
  assert.ok(!shows('leeward.backUpNow', backup));
  assert.ok(shows('leeward.move', devserver));
  assert.ok(!shows('leeward.move', backups));
  for (const restore of ['leeward.restoreToNewDevserver', 'leeward.restorePath']) {
    assert.ok(shows(restore, backup));
    assert.ok(!shows(restore, 'backup failed'));
    assert.ok(!shows(restore, devserver));
  }
  assert.ok(!shows('leeward.showEnvironment', backup), 'a backup is not an environment');
});

test('the walkthrough: install, sign in, create, connect', () => {
  assert.deepEqual(
    manifest.contributes.walkthroughs[0]?.steps.map((s) => s.id),
    ['install', 'signIn', 'create', 'connect'],
  );
});
