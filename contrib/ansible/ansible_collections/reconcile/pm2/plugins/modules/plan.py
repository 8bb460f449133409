#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) the reconcile maintainers
# SPDX-License-Identifier: MIT OR Apache-2.0

from __future__ import annotations

DOCUMENTATION = r'''
---
module: plan
short_description: Show what reconcile would change in a host's PM2 processes
version_added: "0.1.0"
description:
  - Runs C(reconcile plan) on the target host and returns the plan; compares the
    project's ecosystem files with the live processes of the namespaces it owns.
  - Read-only; never reports C(changed). Use RV(has_changes) to act on the result
    (for example to collect the hosts that would change before a deploy).
  - A plan that cannot be made (lint errors, a live name conflict, a daemon that does
    not answer) fails the task with C(reconcile)'s message.
author:
  - reconcile maintainers (!UNKNOWN)
requirements:
  - C(reconcile) on the target host (on E(PATH) or named by O(binary)).
options:
  project_dir:
    description:
      - The project directory on the target, holding C(reconcile.toml) and the
        ecosystem files (C(reconcile -C DIR)).
    type: path
    required: true
  binary:
    description:
      - The C(reconcile) executable. A bare name is looked up on E(PATH); a path is
        used as it is.
    type: path
    default: reconcile
  config:
    description:
      - The project file, if not C(reconcile.toml) in O(project_dir) (C(--config)).
    type: path
  env:
    description:
      - Which C(env_<name>) block of the ecosystem files to merge (C(--env)); default
        C([project] env) of C(reconcile.toml).
    type: str
  pm2_home:
    description:
      - The PM2 home of the daemon (sets E(PM2_HOME) for C(reconcile)). C([pm2] home)
        in C(reconcile.toml) takes precedence; without either, C(~/.pm2) of the
        remote user.
    type: path
attributes:
  check_mode:
    description: The module only reads; it runs the same in check mode.
    support: full
  diff_mode:
    description: >-
      Never reports a change, so shows no diff; run M(reconcile.pm2.apply) in check
      mode with C(--diff) to see each app's attributes before and after.
    support: none
  platform:
    description: Hosts where PM2 runs.
    support: full
    platforms: posix
seealso:
  - module: reconcile.pm2.apply
'''

EXAMPLES = r'''
- name: What would a deploy change?
  reconcile.pm2.plan:
    project_dir: /srv/shop/deploy
  register: shop_plan

- name: Say so
  ansible.builtin.debug:
    msg: "{{ shop_plan.plan.summary }}"
  when: shop_plan.has_changes
'''

RETURN = r'''
plan:
  description:
    - The plan, as C(reconcile plan --format json) prints it (format version 1) with
      C(changes) (each with C(name), C(namespace), C(action), C(attributes) before and
      after, C(reason), C(pm_ids)), C(ignored), C(unmanaged), C(summary) (counts per
      action), C(guard) (blast-radius figures and violations) and C(basis). Secret
      values are already hidden.
  returned: always
  type: dict
  sample:
    version: 1
    project: shop
    namespaces: [shop]
    changes: []
    ignored:
      - {name: stock-alert, namespace: stock-alert, pm_id: 0}
    summary: {create: 0, update: 0, replace: 0, scale: 0, delete: 0, noop: 2}
has_changes:
  description: Whether the plan has changes (C(reconcile plan) exited 2).
  returned: always
  type: bool
cmd:
  description: The C(reconcile plan) command run.
  returned: always
  type: list
  elements: str
rc:
  description: The exit code of a C(reconcile plan) that failed (1).
  returned: failure
  type: int
stderr:
  description: Its standard error (lint warnings).
  returned: always
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.reconcile.pm2.plugins.module_utils.reconcile import (
    COMMON_ARGS,
    plan,
)


def main():
    module = AnsibleModule(argument_spec=dict(COMMON_ARGS), supports_check_mode=True)
    plan_json, has_changes, fields = plan(module)
    result = dict(changed=False, plan=plan_json, has_changes=has_changes, **fields)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
