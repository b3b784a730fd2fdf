/** The `leeward.status` status-bar item: the shown environment's state and RTT. */
import * as vscode from 'vscode';

import type { StatusView } from '../common/status';

export const STATUS_ITEM_ID = 'leeward.status';

export class StatusBar implements vscode.Disposable {
  readonly item: vscode.StatusBarItem;

  constructor() {
    this.item = vscode.window.createStatusBarItem(
      STATUS_ITEM_ID,
      vscode.StatusBarAlignment.Left,
      -100,
    );
    this.item.name = 'Leeward';
  }

  show(view: StatusView): void {
    this.item.text = view.text;
    const tooltip = new vscode.MarkdownString(view.tooltip);
    this.item.tooltip = tooltip;
    this.item.backgroundColor =
      view.background === undefined
        ? undefined
        : new vscode.ThemeColor(`statusBarItem.${view.background}Background`);
    this.item.command = { title: 'Leeward', ...view.command };
    this.item.show();
  }

  dispose(): void {
    this.item.dispose();
  }
}
