/** Which environment a command acts on: the one it was given (a tree item, a name from the
 * status bar) or one the user picks. */
import * as vscode from 'vscode';

import { expiryLabel } from '../common/format';
import { stateOf } from '../common/status';
import type { Environment } from '../protocol/generated';
import type { CommandContext } from './context';

/** The name in a command's argument: a name, an Environment (tree items), or nothing. */
export function referenceOf(argument: unknown): string | undefined {
  if (typeof argument === 'string' && argument !== '') return argument;
  if (argument !== null && typeof argument === 'object' && 'name' in argument) {
    const name = argument.name;
    if (typeof name === 'string' && name !== '') return name;
  }
  return undefined;
}

/** A command's environment: its name, and what the last list says of it (nothing when it is
 * not in the list, which may be older than the caller's: the daemon judges then). */
export interface Target {
  name: string;
  environment: Environment | undefined;
}

export async function resolveEnvironment(
  ctx: CommandContext,
  argument: unknown,
  placeholder: string,
  accept: (environment: Environment) => boolean = () => true,
): Promise<Target | undefined> {
  const reference = referenceOf(argument);
  if (reference !== undefined) {
    const environment = ctx.store.find(reference);
    return { name: environment?.name ?? reference, environment };
  }
  const candidates = ctx.store.environments.filter(accept);
  if (candidates.length === 0) {
    const create = 'Create Environment';
    const answer = await vscode.window.showInformationMessage(
      ctx.store.environments.length === 0
        ? 'You have no environments yet.'
        : 'None of your environments can do that now.',
      create,
    );
    if (answer === create) await vscode.commands.executeCommand('leeward.createEnvironment');
    return undefined;
  }
  const alias = ctx.windowAlias();
  const first = (e: Environment): number =>
    e.name === alias || e.fqdn === alias ? 0 : e.name === ctx.store.lastUsed ? 1 : 2;
  const ordered = [...candidates].sort((a, b) => first(a) - first(b));
  const now = ctx.now();
  const picked = await vscode.window.showQuickPick(
    ordered.map((environment) => ({
      label: environment.name,
      description: [
        environment.kind,
        environment.region,
        stateOf(environment, ctx.store.healthOf(environment)),
        expiryLabel(environment, now),
      ].join(' · '),
      environment,
    })),
    { placeHolder: placeholder, ignoreFocusOut: true, matchOnDescription: true },
  );
  return picked && { name: picked.environment.name, environment: picked.environment };
}
