# A VM cloned from a cloud-init template with the bpg/proxmox provider.
#
# Uses proxmox_virtual_environment_vm with a clone {} block: the provider's stable,
# production VM resource and the form most examples use; proxmox_cloned_vm is newer and
# still settling. Vigie's rendered .tf.json workspaces use the same resource.
#
# The provider block is left to the caller (endpoint, api_token from a sensitive variable,
# insecure/min_tls), as Terraform recommends for reusable modules.

resource "proxmox_virtual_environment_vm" "this" {
  node_name = var.node_name
  vm_id     = var.vm_id
  name      = var.name
  tags      = var.tags
  started   = var.started

  clone {
    vm_id = var.template_vm_id
    full  = var.full_clone
  }

  cpu {
    cores   = var.cores
    sockets = var.sockets
  }

  memory {
    dedicated = var.memory_mib
  }

  disk {
    datastore_id = var.disk_datastore
    interface    = "scsi0"
    size         = var.disk_gib
  }

  network_device {
    bridge  = var.bridge
    model   = "virtio"
    vlan_id = var.vlan_id
  }

  agent {
    enabled = var.agent_enabled
  }

  operating_system {
    type = "l26"
  }

  initialization {
    ip_config {
      ipv4 {
        address = var.ipv4_address
        gateway = var.ipv4_gateway
      }
    }

    user_account {
      username = var.ci_user
      keys     = var.ssh_keys
    }
  }
}
