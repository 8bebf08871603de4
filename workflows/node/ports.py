"""The port product's workflows (a port uses a node), and reconciling a node with IPAM."""

from __future__ import annotations

import logging

from workflows.dsl import State, StepList, begin, step
from workflows.node import ipam
from workflows.node.forms import CreatePortForm, ModifyPortForm
from workflows.node.products import NodeProduct, PortProduct
from workflows.registry import create_workflow, modify_workflow, reconcile_workflow, terminate_workflow

logger = logging.getLogger(__name__)


@step("Construct port model")
def construct_port(subscription: PortProduct, node: str, port_name: str, port_mode: str,
                   port_description: str = "") -> State:
    # The node block stays the node subscription's: the port only links to it (and so uses it).
    node_model = NodeProduct.load(node)
    subscription.port.node = node_model.node
    subscription.port.port_name = port_name
    subscription.port.port_mode = port_mode
    subscription.port.port_description = port_description or None
    subscription.description = f"Port {node_model.node.node_name} {port_name}"
    return {"subscription": subscription}


@create_workflow("Create port", initial_input_form=CreatePortForm, product_types=["Port"])
def create_port() -> StepList:
    return begin >> construct_port


@step("Update port")
def update_port(subscription: PortProduct, enabled: bool, port_description: str | None = None) -> State:
    subscription.port.enabled = enabled
    if port_description is not None:
        subscription.port.port_description = port_description or None
    return {"subscription": subscription}


@modify_workflow("Modify port", initial_input_form=ModifyPortForm, product_types=["Port"])
def modify_port() -> StepList:
    return begin >> update_port


@step("Shut the port down on its node")
def shut_port(subscription: PortProduct) -> State:
    logger.info("port %s on %s: shut down", subscription.port.port_name, subscription.port.node.node_name)
    return {"shut_port": subscription.port.port_name}


@terminate_workflow("Terminate port", product_types=["Port"])
def terminate_port() -> StepList:
    return begin >> shut_port


@step("Read the loopback from IPAM")
def loopback_from_ipam(subscription: NodeProduct) -> State:
    """IPAM is the source of truth for loopbacks: the subscription takes whatever IPAM says now."""
    found = ipam.lookup_loopback(subscription.node.node_name)
    subscription.node.ipv4_loopback = found
    return {"subscription": subscription, "ipam_loopback": str(found) if found else None}


@reconcile_workflow("Reconcile node with IPAM", product_types=["Node"])
def reconcile_node() -> StepList:
    return begin >> loopback_from_ipam
