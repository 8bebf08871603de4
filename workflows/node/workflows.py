"""The node product's workflows: create (with a callback step), modify (with an input step), terminate and validate."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from workflows.dsl import State, StepList, begin, callback_step, conditional, inputstep, step
from workflows.node import ipam, provisioning
from workflows.node.forms import CreateNodeForm, ModifyNodeForm
from workflows.node.products import NodeProduct
from workflows.predicates import no_unfinished_instance
from workflows.registry import create_workflow, modify_workflow, terminate_workflow, validate_workflow

logger = logging.getLogger(__name__)


# --- create ----------------------------------------------------------------------------------------
@step("Construct node model")
def construct_node(subscription: NodeProduct, node_name: str, node_role: str, inventory_id: int) -> State:
    subscription.node.node_name = node_name
    subscription.node.node_role = node_role
    subscription.node.inventory_id = inventory_id
    subscription.description = f"Node {node_name}"
    return {"subscription": subscription}


@step("Allocate loopback in IPAM")
def allocate_loopback(subscription: NodeProduct) -> State:
    address = ipam.allocate_loopback(subscription.node.node_name)
    subscription.node.ipv4_loopback = address
    return {"subscription": subscription, "ipv4_loopback": str(address)}


def request_deploy(node_name: str, callback_url: str, callback_progress_url: str) -> State:
    # Safe to run again: a retry asks for the same deploy with a new callback URL (the old one stops working).
    provisioning.request_deploy(node_name, callback_url, callback_progress_url)
    return {"deploy_requested_for": node_name}


def check_deploy(deploy_result: Any) -> State:
    if not isinstance(deploy_result, dict) or deploy_result.get("ok") is not True:
        error = deploy_result.get("error") if isinstance(deploy_result, dict) else None
        said = error if isinstance(error, str) and error else repr(deploy_result)
        raise ValueError(f"the provisioning system did not deploy the configuration: {said}")
    return {"deployed_config_lines": deploy_result.get("config_lines")}


# Skipped (logged as such) while the demo's provisioning system is off: the default, and in the tests.
deploy_node = conditional(lambda state: provisioning.enabled())(
    callback_step("Deploy node configuration", action=request_deploy, validate=check_deploy,
                  timeout=timedelta(minutes=15), result_key="deploy_result")
)


@create_workflow("Create node", initial_input_form=CreateNodeForm, product_types=["Node"])
def create_node() -> StepList:
    return begin >> construct_node >> allocate_loopback >> deploy_node


# --- modify ----------------------------------------------------------------------------------------
@inputstep("Ask for the new node name", form=ModifyNodeForm)
def ask_new_name(subscription: NodeProduct) -> State:
    # What the form shows first: the current values.
    return {"node_name": subscription.node.node_name, "node_role": str(subscription.node.node_role)}


@step("Rename node in IPAM")
def rename_in_ipam(subscription: NodeProduct, node_name: str) -> State:
    old_name = subscription.node.node_name
    ipam.rename(old_name, node_name)
    return {"old_node_name": old_name}


@step("Update node in subscription")
def update_node(subscription: NodeProduct, node_name: str, node_role: str | None = None) -> State:
    subscription.node.node_name = node_name
    if node_role:
        subscription.node.node_role = node_role
    subscription.description = f"Node {node_name}"
    return {"subscription": subscription}


@modify_workflow("Modify node", product_types=["Node"])
def modify_node() -> StepList:
    return begin >> ask_new_name >> rename_in_ipam >> update_node


# --- terminate -------------------------------------------------------------------------------------
@step("Release loopback in IPAM")
def release_loopback(subscription: NodeProduct) -> State:
    ipam.release_loopback(subscription.node.node_name)
    return {"released_loopback": str(subscription.node.ipv4_loopback or "")}


@terminate_workflow("Terminate node", product_types=["Node"])
def terminate_node() -> StepList:
    return begin >> release_loopback


# --- validate --------------------------------------------------------------------------------------
@step("Check loopback against IPAM")
def check_loopback(subscription: NodeProduct) -> State:
    expected = ipam.lookup_loopback(subscription.node.node_name)
    actual = subscription.node.ipv4_loopback
    if expected != actual:
        raise ValueError(
            f"node {subscription.node.node_name}: the subscription says loopback {actual}, IPAM says {expected}"
        )
    return {"loopback_ok": True}


@validate_workflow("Validate node", product_types=["Node"], run_predicate=no_unfinished_instance)
def validate_node() -> StepList:
    return begin >> check_loopback
