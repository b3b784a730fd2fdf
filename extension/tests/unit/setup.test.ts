import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import type * as vscode from 'vscode';

import { EnvironmentStore } from '../../src/common/environments';
import type { Environment, SetupItem, SyncStatus } from '../../src/protocol/generated';
import {
  detailItem,
  EnvironmentsTree,
  environmentDetails,
  environmentItem,
} from '../../src/views/environmentsTree';
import {
  noticeMessage,
  SetupNoticeWatch,
  SHOW_DETAILS,
  showNotices,
} from '../../src/views/setupNotices';
import * as stub from '../support/vscode-stub';
import { environment, MemoryMemento, NOW } from '../support/fixtures';

beforeEach(() => stub.reset());

function tooltipOf(treeItem: vscode.TreeItem | undefined): string {
  const tooltip = treeItem?.tooltip;
  return typeof tooltip === 'string' ? tooltip : (tooltip?.value ?? '');
}

function item(overrides: Partial<SetupItem> = {}): SetupItem {
  return {
    kind: 'feature',
    name: 'git-defaults',
    state: 'installed',
    detail: 'install script finished in 0.2 s',
    log: '',
    logPath: '/home/ada/.local/state/leeward/setup/feature-git-defaults.log',
    startedAt: '2030-01-01T11:00:06Z',
    finishedAt: '2030-01-01T11:00:07Z',
    ...overrides,
  };
}

const failed = item({
  name: 'failing',
  state: 'failed',
  detail: 'install script exited with status 3 after 0.4 s',
  log: 'fetching the thing\nno thing here\n',
  logPath: '/home/ada/.local/state/leeward/setup/feature-failing.log',
});

function sync(overrides: Partial<SyncStatus> = {}): SyncStatus {
  return {
    version: 4,
    syncedAt: '2030-01-01T11:30:00Z',
    conflicts: [],
    refused: [],
    error: '',
    ...overrides,
  };
}

const conflict = {
  path: '.bashrc',
  copyPath: '.bashrc.leeward-conflict-4',
  otherEnvironment: 'web',
  version: 4,
  at: '2030-01-01T11:30:00Z',
};

test('an environment with setup items or conflicts expands to them, in order', async () => {
  const box = environment({
    setup: [item(), failed, item({ kind: 'one-off', name: 'one-off 1', state: 'installing' })],
    sync: sync({
      conflicts: [conflict],
      refused: [{ path: '.ssh/id_ed25519', code: 'secret', reason: 'It looks like a key.' }],
    }),
  });
  const store = new EnvironmentStore(new MemoryMemento());
  store.setList({ environments: [box], stale: false, fetchedAt: null, reason: '' });
  const tree = new EnvironmentsTree(store, () => NOW);
  const [row] = await tree.getChildren();
  assert.ok(row);
  assert.equal(tree.getTreeItem(row).collapsibleState, stub.TreeItemCollapsibleState.Collapsed);
  const children = await tree.getChildren(row);
  const items = children.map((child) => tree.getTreeItem(child));
  assert.deepEqual(
    items.map((i) => i.label),
    [
      'git-defaults',
      'failing',
      'one-off 1',
      'conflict: .bashrc → .bashrc.leeward-conflict-4',
      'not synced: .ssh/id_ed25519',
      'Backups',
    ],
  );
  assert.deepEqual(
    items.map((i) => (i.iconPath as stub.ThemeIcon).id),
    ['pass', 'error', 'loading~spin', 'git-merge', 'circle-slash', 'archive'],
  );
  const [installed, broken] = items;
  assert.equal(installed?.description, 'install script finished in 0.2 s');
  assert.equal(broken?.description, 'install script exited with status 3 after 0.4 s');
  assert.match(tooltipOf(broken), /fetching the thing\nno thing here/);
  assert.match(tooltipOf(broken), /feature-failing\.log/);
  assert.doesNotMatch(tooltipOf(installed), /fetching/);
  // Children have no environment menus and are leaves; ids are unique.
  for (const i of items) assert.doesNotMatch(i.contextValue ?? '', /\benvironment\b/);
  assert.equal(new Set(items.map((i) => i.id)).size, items.length);
  for (const child of children) assert.deepEqual(await tree.getChildren(child), []);
});

test('a container with nothing under it does not expand (a devserver has its Backups)', () => {
  const plain = environment({ kind: 'container', flavor: null, profile: 'web' });
  assert.deepEqual(environmentDetails(plain), []);
  assert.equal(
    environmentItem(plain, undefined, NOW).collapsibleState,
    stub.TreeItemCollapsibleState.None,
  );
});

test('a child is never taken for an environment by the commands', () => {
  const [child] = environmentDetails(environment({ setup: [failed] }));
  assert.ok(child);
  assert.equal('name' in child, false);
  assert.equal(detailItem(child).contextValue, 'setup failed');
});

test('a new failure or conflict warns once; the first list and repeats do not', async () => {
  const watch = new SetupNoticeWatch();
  const box = (overrides: Partial<Environment>): Environment => environment(overrides);
  assert.deepEqual(watch.update([box({ setup: [failed] })]), [], 'old news at start');
  assert.deepEqual(watch.update([box({ setup: [failed] })]), []);
  const retried = { ...failed, startedAt: '2030-01-01T11:10:00Z' };
  const news = watch.update([box({ setup: [retried] })]);
  assert.equal(news.length, 1);
  assert.equal(
    noticeMessage(news),
    'Leeward: box: feature failing failed (install script exited with status 3 after 0.4 s).',
  );
  assert.deepEqual(watch.update([box({ setup: [retried] })]), []);
  const both = watch.update([
    box({ setup: [retried], sync: sync({ conflicts: [conflict] }) }),
    environment({ name: 'web', setup: [{ ...failed, name: 'prompt' }] }),
  ]);
  assert.equal(both.length, 2);
  assert.match(noticeMessage(both), /^Leeward: 2 problems in box, web: /);
  assert.match(noticeMessage(both), /\.bashrc conflicts with your profile/);
  // An installed or installing item is no news; after the daemon stopped, a new start.
  assert.deepEqual(watch.update([box({ setup: [item()] })]), []);
  assert.deepEqual(watch.update(undefined), []);
  assert.deepEqual(watch.update([box({ setup: [{ ...failed, startedAt: 'later' }] })]), []);

  stub.answers.message.push(SHOW_DETAILS);
  await showNotices(news);
  assert.equal(stub.recorded.messages.length, 1);
  assert.equal(stub.recorded.messages[0]?.severity, 'warning');
  assert.deepEqual(stub.recorded.executed, [{ command: 'leeward.showEnvironment', args: ['box'] }]);
  await showNotices([]);
  assert.equal(stub.recorded.messages.length, 1, 'nothing new: no message');
});
