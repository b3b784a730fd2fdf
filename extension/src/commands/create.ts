/** `Leeward: Create Environment`: the wizard, then a progress notification until it is ready. */
import * as vscode from 'vscode';

import { CatalogGetRequest } from '../protocol/methods';
import type { Environment } from '../protocol/generated';
import type { CommandContext } from './context';
import {
  describeRequest,
  kindChoices,
  runCreateWizard,
  type Choice,
  type Prompter,
  type Step,
} from './createWizard';

/** The wizard's steps as VS Code quick picks. */
export const quickPickPrompter: Prompter = {
  async pick<T>(choices: Choice<T>[], step: Step): Promise<T | undefined> {
    const picked = await vscode.window.showQuickPick(
      choices.map((choice) => ({ ...choice })),
      {
        title: step.title,
        placeHolder: step.placeholder,
        ignoreFocusOut: true,
        matchOnDescription: true,
        matchOnDetail: true,
      },
    );
    return picked?.value;
  },
};

const STAGES = ['placing', 'starting', 'certifying', 'ready'];

/** How far along a progress message is, in percent (its first word is the stage). */
export function stagePercent(message: string): number | undefined {
  const stage = STAGES.indexOf(
    message
      .trim()
      .split(/[\s:…]/, 1)[0]
      ?.toLowerCase() ?? '',
  );
  return stage < 0 ? undefined : ((stage + 1) * 100) / STAGES.length;
}

export async function createEnvironment(
  ctx: CommandContext,
  prompter: Prompter = quickPickPrompter,
): Promise<Environment | undefined> {
  const catalog = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Window, title: 'Leeward: loading the catalog' },
    () => ctx.daemon.request(CatalogGetRequest, {}),
  );
  if (kindChoices(catalog).length === 0) {
    void vscode.window.showWarningMessage(
      'The fleet offers no flavors or profiles, so there is nothing to create; ask your platform team.',
    );
    return undefined;
  }
  const request = await runCreateWizard(catalog, prompter);
  if (request === undefined) return undefined;

  const what = describeRequest(request);
  ctx.log.info(`Creating ${what}: ${JSON.stringify(request)}`);
  const environment = await vscode.window.withProgress(
    {
      location: vscode.ProgressLocation.Notification,
      title: `Creating ${what}`,
      cancellable: false,
    },
    async (progress) => {
      let done = 0;
      return ctx.daemon.create(request, (message) => {
        ctx.log.info(`Create ${what}: ${message}`);
        const percent = stagePercent(message);
        if (percent !== undefined && percent > done) {
          progress.report({ message, increment: percent - done });
          done = percent;
        } else {
          progress.report({ message });
        }
      });
    },
  );
  ctx.store.upsert(environment);
  await ctx.store.rememberLastUsed(environment.name);
  ctx.log.info(`Created ${environment.name} (${environment.id}) in ${environment.region}.`);
  const connect = 'Connect';
  const terminal = 'Open Terminal';
  void vscode.window
    .showInformationMessage(
      `${environment.name} is ready (${environment.kind} in ${environment.region}).`,
      connect,
      terminal,
    )
    .then(async (answer) => {
      if (answer === connect)
        await vscode.commands.executeCommand('leeward.connect', environment.name);
      if (answer === terminal) {
        await vscode.commands.executeCommand('leeward.openTerminal', environment.name);
      }
    });
  return environment;
}
