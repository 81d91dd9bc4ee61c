output "vm_id" {
  description = "The VM id."
  value       = proxmox_virtual_environment_vm.this.vm_id
}

output "ipv4_addresses" {
  description = "IPv4 addresses reported by the guest agent, per interface."
  value       = proxmox_virtual_environment_vm.this.ipv4_addresses
}

output "mac_addresses" {
  description = "MAC addresses of the network devices."
  value       = proxmox_virtual_environment_vm.this.mac_addresses
}
