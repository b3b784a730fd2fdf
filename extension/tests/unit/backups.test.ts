import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import * as vscode from 'vscode';

import { registerCommands } from '../../src/commands';
import { validateHomePath, validateName } from '../../src/commands/backups';
import { BackupLists } from '../../src/common/backups';
import { EnvironmentStore } from '../../src/common/environments';
import { minutesLabel, sizeLabel, timeLabel } from '../../src/common/format';
import { statusView } from '../../src/common/status';
import type { BackupList, Environment, Move, Restore } from '../../src/protocol/generated';
import { EnvironmentsTree, type EnvironmentsNode } from '../../src/views/environmentsTree';
import * as stub from '../support/vscode-stub';
import {
  backup,
  backupStatus,
  CATALOG,
  commandContext,
  daemonStatus,
  environment,
  FakeDaemon,
  health,
  MemoryMemento,
  NOW,
} from '../support/fixtures';

beforeEach(() => stub.reset());

function tooltipOf(item: vscode.TreeItem): string {
  const tooltip = item.tooltip;
  return typeof tooltip === 'string' ? tooltip : (tooltip?.value ?? '');
}

function iconOf(item: vscode.TreeItem): string {
  return (item.iconPath as stub.ThemeIcon).id;
}

function listOf(env: Environment, backups = [backup()]): BackupList {
  return { environment: env.name, status: env.backup ?? backupStatus(), backups };
}

function treeWith(env: Environment, fetch: (name: string) => Promise<BackupList>) {
  const store = new EnvironmentStore(new MemoryMemento());
  store.setList({ environments: [env], stale: false, fetchedAt: null, reason: '' });
  const lists = new BackupLists(fetch);
  return { store, lists, tree: new EnvironmentsTree(store, () => NOW, lists) };
}

async function backupsNodeOf(tree: EnvironmentsTree): Promise<EnvironmentsNode> {
  const [row] = await tree.getChildren();
  assert.ok(row);
  const children = await tree.getChildren(row);
  const node = children.at(-1);
  assert.ok(node && 'parent' in node && node.type === 'backups');
  return node;
}

test('a devserver has a Backups node that lists its backups when expanded', async () => {
  const box = environment({ backup: backupStatus() });
  const fetched: string[] = [];
  const running = backup({
    id: 4,
    state: 'running',
    trigger: 'schedule',
    progress: 0.427,
    startedAt: '2030-01-01T11:59:00Z',
    finishedAt: null,
    snapshot: null,
  });
  const failed = backup({
    id: 2,
    state: 'failed',
    message: 'Its host: no answer',
    snapshot: null,
    trigger: 'schedule',
  });
  const { tree } = treeWith(box, async (name) => {
    fetched.push(name);
    return listOf(box, [running, backup(), failed]);
  });
  const node = await backupsNodeOf(tree);
  const folder = tree.getTreeItem(node);
  assert.equal(folder.label, 'Backups');
  assert.equal(folder.collapsibleState, stub.TreeItemCollapsibleState.Collapsed);
  assert.equal(folder.description, `last ${timeLabel('2030-01-01T11:30:00Z')}`);
  assert.equal(folder.contextValue, 'backups backUpNow');
  assert.equal(iconOf(folder), 'archive');
  assert.match(tooltipOf(folder), /Backed up every 1 h/);
  assert.deepEqual(fetched, [], 'nothing is fetched before it is expanded');

  const items = (await tree.getChildren(node)).map((child) => tree.getTreeItem(child));
  assert.deepEqual(fetched, ['box']);
  assert.deepEqual(
    items.map((i) => i.label),
    [
      `${timeLabel('2030-01-01T11:59:00Z')} · 42%`,
      `${timeLabel('2030-01-01T11:29:50Z')} · 5.3 MiB · ${(1234).toLocaleString()} files`,
      timeLabel('2030-01-01T11:29:50Z'),
    ],
  );
  assert.deepEqual(
    items.map((i) => i.description),
    ['schedule · running', 'request · succeeded', 'schedule · failed'],
  );
  assert.deepEqual(items.map(iconOf), ['loading~spin', 'pass', 'error']);
  assert.deepEqual(
    items.map((i) => i.contextValue),
    ['backup running', 'backup succeeded restorable', 'backup failed'],
  );
  const [, done, broken] = items.map(tooltipOf);
  assert.match(done ?? '', /\*\*Backup 3\*\* of box — succeeded/);
  assert.match(done ?? '', /12 new, 3 changed, 1219 unchanged; 48 KiB added to the store/);
  assert.match(done ?? '', /Snapshot 4f2a9c1e/);
  assert.match(broken ?? '', /Failed: Its host: no answer/);
  assert.equal(new Set(items.map((i) => i.id)).size, 3);
  for (const i of items) assert.doesNotMatch(i.contextValue ?? '', /\benvironment\b/);
});

test('no backups yet, or the daemon cannot list them: one line that says so', async () => {
  const box = environment({ backup: backupStatus({ lastSuccessAt: null, lastBackup: null }) });
  const { tree } = treeWith(box, async () => listOf(box, []));
  const node = await backupsNodeOf(tree);
  assert.equal(tree.getTreeItem(node).description, 'none yet');
  const [note] = (await tree.getChildren(node)).map((child) => tree.getTreeItem(child));
  assert.equal(note?.label, 'No backups yet (it is backed up every 1 h)');
  assert.equal(note && iconOf(note), 'info');

  const broken = treeWith(box, () => Promise.reject(new Error('box has no such thing.')));
  const [failed] = await broken.tree.getChildren(await backupsNodeOf(broken.tree));
  assert.ok(failed);
  const item = broken.tree.getTreeItem(failed);
  assert.equal(item.label, 'Cannot list the backups: box has no such thing.');
  assert.equal(iconOf(item), 'error');
});

test('overdue backups warn on the Backups node; a stopped devserver offers no backup', async () => {
  const box = environment({
    state: 'failed',
    backup: backupStatus({ overdue: true, running: true, message: 'restic: disk full' }),
  });
  const { tree } = treeWith(box, async () => listOf(box));
  const item = tree.getTreeItem(await backupsNodeOf(tree));
  assert.equal(item.description, 'overdue · running…');
  assert.equal(iconOf(item), 'warning');
  assert.equal(item.contextValue, 'backups');
  assert.match(tooltipOf(item), /Backups are overdue/);
});

test('a list is fetched again when the backup status changes, or soon while one runs', async () => {
  let now = 0;
  let answer = listOf(environment(), [backup({ state: 'running', progress: 0.1 })]);
  const fetched: string[] = [];
  const lists = new BackupLists(
    async (name) => {
      fetched.push(name);
      return answer;
    },
    () => now,
    1,
  );
  let changes = 0;
  lists.onDidChange(() => changes++);
  const box = environment({ backup: backupStatus({ running: true }) });
  await lists.list(box);
  await lists.list(box);
  assert.equal(fetched.length, 1, 'the same status: the list is kept');
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(changes, 1, 'a running backup asks for a redraw');
  now = 5;
  answer = listOf(environment(), [backup()]);
  await lists.list(box);
  assert.equal(fetched.length, 2, 'kept only a moment while it runs');
  await lists.list(box);
  assert.equal(fetched.length, 2);
  await lists.list({ ...box, backup: backupStatus({ lastBackup: 5 }) });
  assert.equal(fetched.length, 3, 'a new status: asked again');
  lists.dispose();
});

test('the status tooltip says when it was last backed up, and warns when overdue', () => {
  const input = (env: Environment) => ({
    daemon: 'running' as const,
    account: daemonStatus(),
    environment: env,
    health: health(env),
    now: NOW,
  });
  const fine = statusView(input(environment({ backup: backupStatus() })));
  assert.match(
    fine.tooltip,
    new RegExp(`Last backup: ${escapeRegExp(markdown(timeLabel('2030-01-01T11:30:00Z')))}`),
  );
  assert.doesNotMatch(fine.tooltip, /overdue/);
  assert.equal(fine.background, undefined);

  const never = statusView(
    input(environment({ backup: backupStatus({ lastSuccessAt: null, overdue: true }) })),
  );
  assert.match(never.tooltip, /Last backup: never/);
  assert.match(never.tooltip, /\*\*Backups are overdue\*\*: none succeeded in 2 h\./);

  const failing = statusView(
    input(
      environment({
        backup: backupStatus({ overdue: true, intervalMinutes: 30, message: 'disk full' }),
      }),
    ),
  );
  assert.match(failing.tooltip, /none succeeded in 1 h\. The last one failed: disk full/);

  const web = statusView(input(environment({ kind: 'container', backup: null })));
  assert.doesNotMatch(web.tooltip, /backup/i, 'containers are not backed up');
});

test('sizes and intervals read as people write them', () => {
  assert.equal(sizeLabel(512), '512 B');
  assert.equal(sizeLabel(48 * 1024), '48 KiB');
  assert.equal(sizeLabel(5.3 * 1024 * 1024), '5.3 MiB');
  assert.equal(sizeLabel(1.25 * 1024 ** 3), '1.3 GiB');
  assert.equal(minutesLabel(45), '45 min');
  assert.equal(minutesLabel(120), '2 h');
  assert.equal(minutesLabel(90), '1 h 30 min');
  assert.equal(minutesLabel(7 * 24 * 60), '7 days');
});

// ---------------------------------------------------------------------------------- commands

function setup(handlers: ConstructorParameters<typeof FakeDaemon>[0] = {}) {
  const daemon = new FakeDaemon(handlers);
  const ctx = commandContext(daemon);
  registerCommands(ctx);
  return { daemon, ctx };
}

const box = environment({ backup: backupStatus() });

test('back up now, from the Backups node: a progress notification, then what it backed up', async () => {
  const { daemon } = setup({ 'leeward/backups/now': () => backup() });
  daemon.workProgress = [
    ['starting', 0],
    ['backing up box: 40%', 40],
    ['backing up box: 100%', 100],
    ['Backup 3 of box succeeded: 1234 files in 2.5 s', undefined],
  ];
  await vscode.commands.executeCommand('leeward.backUpNow', { parent: box, type: 'backups' });
  assert.deepEqual(daemon.requests, [
    { method: 'leeward/backups/now', params: { environment: 'box' } },
  ]);
  const notification = stub.recorded.progress[0];
  assert.equal(notification?.options.title, 'Backing up box');
  assert.deepEqual(
    notification?.reports.map((r) => r.increment),
    [undefined, 40, 60, undefined],
  );
  assert.match(stub.recorded.messages.at(-1)?.message ?? '', /^Backed up box: .* \(backup 3, /);
});

test('back up now: a failed backup is an error with its reason', async () => {
  setup({
    'leeward/backups/now': () => backup({ state: 'failed', message: 'Its host: no answer' }),
  });
  await vscode.commands.executeCommand('leeward.backUpNow', box);
  const error = stub.recorded.messages.find((m) => m.severity === 'error');
  assert.equal(error?.message, 'Backup 3 of box failed: Its host: no answer');
});

function restore(overrides: Partial<Restore> = {}): Restore {
  return {
    backup: backup(),
    environment: 'box',
    environmentId: 'e-box',
    destination: '.leeward-restore/4f2a9c1e',
    files: 1,
    bytes: 120,
    ...overrides,
  };
}

test('restore into a new devserver: name, flavor and region, each optional', async () => {
  const { daemon, ctx } = setup({
    'leeward/catalog/get': () => CATALOG,
    'leeward/backups/restore': () =>
      restore({ environment: 'box-2', environmentId: 'e-box-2', destination: null }),
  });
  ctx.store.setList({ environments: [box], stale: false, fetchedAt: null, reason: '' });
  stub.answers.inputBox.push('');
  stub.answers.quickPick.push('gpu', 'Keep north');
  await vscode.commands.executeCommand('leeward.restoreToNewDevserver', {
    parent: box,
    type: 'backup',
    backup: backup(),
  });
  assert.deepEqual(
    stub.recorded.quickPicks[0]?.items.map((i) => i.label),
    ['Keep small', 'gpu'],
  );
  assert.deepEqual(daemon.requests.at(-1), {
    method: 'leeward/backups/restore',
    params: { environment: 'box', backup: 3, to: { flavor: 'gpu' } },
  });
  assert.match(stub.recorded.messages.at(-1)?.message ?? '', /new devserver box-2/);
  assert.equal(validateName('Box'), validateName('-x'));
  assert.equal(validateName(''), undefined);
  assert.equal(validateName('box-2'), undefined);
});

test('restore a path from the palette: a devserver, one of its backups, then the path', async () => {
  const { daemon, ctx } = setup({
    'leeward/backups/list': () =>
      listOf(box, [backup({ id: 4, state: 'failed' }), backup({ id: 3 })]),
    'leeward/backups/restore': () => restore({ files: 1, bytes: 120 }),
  });
  ctx.store.setList({ environments: [box], stale: false, fetchedAt: null, reason: '' });
  stub.answers.quickPick.push('box', (items) => (items.length === 1 ? 0 : undefined));
  stub.answers.inputBox.push(' .bashrc ');
  await vscode.commands.executeCommand('leeward.restorePath');
  assert.deepEqual(daemon.requests.at(-1), {
    method: 'leeward/backups/restore',
    params: { environment: 'box', backup: 3, paths: ['.bashrc'] },
  });
  assert.equal(
    stub.recorded.messages.at(-1)?.message,
    'Restored .bashrc (1 files, 120 B) into ~/.leeward-restore/4f2a9c1e on box.',
  );
  assert.equal(
    validateHomePath('/etc/passwd'),
    'A path relative to your home, like .bashrc or src/app.',
  );
  assert.match(validateHomePath('a/../../b') ?? '', /inside the home/);
  assert.equal(validateHomePath('.config/nvim/'), undefined);
});

function moved(overrides: Partial<Move> = {}): Move {
  return {
    id: 'm-1',
    environment: 'box',
    environmentId: 'e-box',
    flavor: 'small',
    region: 'south',
    trigger: 'user',
    stage: 'done',
    state: 'done',
    message: '',
    backup: 5,
    targetId: 'e-box-2',
    startedAt: '2030-01-01T12:00:00Z',
    updatedAt: '2030-01-01T12:03:00Z',
    finishedAt: '2030-01-01T12:03:00Z',
    ...overrides,
  };
}

test('move asks where, confirms (modal), then follows the stages', async () => {
  const { daemon, ctx } = setup({
    'leeward/catalog/get': () => CATALOG,
    'leeward/environments/move': () => moved(),
  });
  ctx.store.setList({ environments: [box], stale: false, fetchedAt: null, reason: '' });
  daemon.workProgress = [
    ['backing-up: the final backup', 0],
    ['creating: box-2 in south', 20],
    ['done: box is now a small devserver in south', 100],
  ];
  stub.answers.quickPick.push('Keep small', 'south');
  stub.answers.message.push('Move');
  await vscode.commands.executeCommand('leeward.move', box);
  const confirm = stub.recorded.messages[0];
  assert.equal(confirm?.message, 'Move box to south?');
  assert.equal(confirm?.options?.modal, true);
  assert.deepEqual(daemon.requests.at(-1), {
    method: 'leeward/environments/move',
    params: { environment: 'box', region: 'south' },
  });
  assert.deepEqual(stub.recorded.progress.find((p) => p.options.title === 'Moving box')?.reports, [
    { message: 'backing-up: the final backup' },
    { message: 'creating: box-2 in south', increment: 20 },
    { message: 'done: box is now a small devserver in south', increment: 80 },
  ]);
  assert.equal(stub.recorded.messages.at(-1)?.message, 'box is now a small devserver in south.');

  stub.answers.quickPick.push('Keep small', 'Keep north');
  const before = daemon.requests.length;
  await vscode.commands.executeCommand('leeward.move', box);
  assert.equal(daemon.requests.length, before + 1, 'only the catalog: nothing to move');
  assert.match(stub.recorded.messages.at(-1)?.message ?? '', /nothing to move/);
});

function markdown(text: string): string {
  return text.replace(/[\\`*_{}[\]()#+\-.!|<>]/g, (c) => `\\${c}`);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
